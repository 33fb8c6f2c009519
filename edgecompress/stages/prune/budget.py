"""Latency-budget pruning, the framework-neutral part: which widths to keep so that a model meets a latency
budget measured on its target while keeping the most important channels.

The problem is HALP's (Shen et al., "Structural Pruning via Latency-Saliency Knapsack", NeurIPS 2022): every
pruning group (channels that must shrink together) picks one width from a few candidates; each width
has a latency cost, read from per-layer latency tables measured on the target (NetAdapt, Yang et al.,
ECCV 2018), and a value, the summed importance of the channels it keeps. Keeping the most value under the
budget is a multiple-choice knapsack, solved here exactly on a discretised latency axis.

Candidates are plateau edges only: a runtime pads channels to its kernel tiles, so between two tile widths
latency is flat and the widest count of a plateau keeps more channels for the same time
(`latency.staircase`). A group's cost is the time of the layers writing its channels (at their current
input widths) plus that of the layers reading them (at their current output widths); the sum over groups
is therefore an approximation when both sides of a layer shrink at once, which is why a budget is reached
over several steps, each solved from the model as it is, and checked against the whole model's predicted
latency (`solve_to_budget` tightens the allowance until the prediction meets it).

Everything here works on plain numbers; `latency_budget.py` and its framework backends supply groups, importances,
latencies and the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgecompress.latency.staircase import PLATEAU_TOLERANCE

#: Latency axis of the knapsack: this many steps between no saving and the saving asked for.
RESOLUTION = 2000


@dataclass(frozen=True)
class GroupChoice:
    """One pruning group's options: candidate widths (ascending, the last one its current width), the latency
    each costs (ms, the group's layers) and the value each keeps (summed importance of the kept channels)."""

    root: str
    widths: tuple[int, ...]
    costs: tuple[float, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.widths or not len(self.widths) == len(self.costs) == len(self.values):
            raise ValueError(
                f"group {self.root}: widths, costs and values must be non-empty and of one length"
            )
        if list(self.widths) != sorted(set(self.widths)):
            raise ValueError(f"group {self.root}: widths must be strictly ascending")

    @property
    def current(self) -> int:
        return self.widths[-1]


def sweep_counts(current: int, *, step: int = 1, floor: int = 8) -> list[int]:
    """Channel counts to time for a group now `current` wide: multiples of 8 (of 16 above 256 channels and
    of 32 above 1024: the tiles of wide layers are as coarse) from the smallest allowed width up, and the
    current width. Every count is a multiple of `step` (grouped convolutions)."""
    counts = {current}
    lowest = max(step, min(floor, current))
    lowest = math.ceil(lowest / step) * step
    c = lowest
    while c < current:
        counts.add(c)
        unit = 8 if c < 256 else 16 if c < 1024 else 32
        unit = math.lcm(unit, step) if step > 1 else unit
        c = (c // unit + 1) * unit
    return sorted(x for x in counts if x <= current)


def plateau_edges(costs: dict[int, float], *, tolerance: float = PLATEAU_TOLERANCE) -> list[int]:
    """The widest count of every latency plateau in a sweep: counts whose next wider count costs more than
    `tolerance` more (and the widest count). A count inside a plateau is never worth keeping: its edge
    keeps more channels for the same time."""
    counts = sorted(costs)
    edges = []
    for i, c in enumerate(counts):
        if i == len(counts) - 1 or costs[counts[i + 1]] > costs[c] * (1 + tolerance) + 1e-9:
            edges.append(c)
    # a wider count measured cheaper (noise) makes the narrower edge pointless: keep the Pareto front
    front: list[int] = []
    for c in reversed(edges):
        if not front or costs[c] < costs[front[-1]]:
            front.append(c)
    return sorted(front)


def solve(groups: Sequence[GroupChoice], saving_ms: float, *, resolution: int = RESOLUTION) -> dict[str, int]:
    """The width of every group that saves at least `saving_ms` of latency against all groups at their
    current width while losing the least value: a multiple-choice knapsack solved by dynamic programming
    over savings discretised to `saving_ms / resolution` (each option's saving rounded down, so the saving
    asked for is met).

    Raises ValueError when even the narrowest candidates save too little (the caller names the floor)."""
    if saving_ms <= 0:
        return {g.root: g.current for g in groups}
    unit = saving_ms / resolution
    top = resolution
    # lost[j]: least value lost for a saving of j units (j == top: at least top units)
    lost = np.full(top + 1, np.inf)
    lost[0] = 0.0
    picks: list[tuple[np.ndarray, np.ndarray]] = []
    for g in groups:
        new = np.full(top + 1, np.inf)
        pick = np.full(top + 1, -1, dtype=np.int32)
        prev = np.full(top + 1, -1, dtype=np.int32)
        for k, (cost, value) in enumerate(zip(g.costs, g.values, strict=True)):
            saved = min(math.floor(max(g.costs[-1] - cost, 0.0) / unit), top)
            loss = g.values[-1] - value
            if saved < top:  # states j < top - saved move to j + saved
                src = lost[: top - saved] + loss
                idx = np.nonzero(src < new[saved:top])[0]
                new[saved + idx], pick[saved + idx], prev[saved + idx] = src[idx], k, idx
            tail = lost[top - saved :] + loss  # the rest reach the cap
            m = int(np.argmin(tail))
            if tail[m] < new[top]:
                new[top], pick[top], prev[top] = tail[m], k, top - saved + m
        picks.append((pick, prev))
        lost = new
    if not math.isfinite(lost[top]):
        raise ValueError("the narrowest candidate widths cannot save that much latency")
    widths: dict[str, int] = {}
    j = top
    for g, (pick, prev) in zip(reversed(groups), reversed(picks), strict=True):
        widths[g.root] = g.widths[int(pick[j])]
        j = int(prev[j])
    return widths


def schedule(start_ms: float, target_ms: float, steps: int) -> list[float]:
    """Predicted-latency targets of `steps` pruning steps from `start_ms` to `target_ms`, geometric: each
    step removes the same fraction of latency (gradual pruning, Zhu & Gupta 2017, in latency)."""
    if steps < 1:
        raise ValueError("steps must be at least 1")
    ratio = target_ms / start_ms
    return [start_ms * ratio ** ((k + 1) / steps) for k in range(steps)]


def solve_to_budget(
    groups: Sequence[GroupChoice],
    current_ms: float,
    budget_ms: float,
    predict: Callable[[dict[str, int]], float],
    *,
    attempts: int = 10,
    tolerance: float = 0.01,
) -> tuple[dict[str, int], float]:
    """Widths whose whole-model prediction (`predict(widths)`, ms) meets `budget_ms`, from a model now
    predicted at `current_ms`. The knapsack's additive savings are a first guess; while the prediction
    misses the budget, the saving asked for is rescaled by the miss (secant steps on saving -> prediction),
    then bisected once a saving that meets the budget and one that does not are known; at most `attempts`
    solves. Returns the meeting solution closest to the budget; if none meets it, the fastest one narrowed
    group by group until it does (`narrow_to_budget`)."""
    if budget_ms >= current_ms:
        widths = {g.root: g.current for g in groups}
        return widths, current_ms
    saving = current_ms - budget_ms
    # the additive savings can underestimate the whole model's (layers outside the groups' cost shrink too, e.g.
    # activations and squeeze-excite between them): ask for at most what the narrowest widths save and let
    # the prediction say whether that is enough
    most = sum(max(g.costs[-1] - min(g.costs), 0.0) for g in groups)
    cap = most * (1 - (len(groups) + 1) / RESOLUTION) if most > 0 else None  # each group rounds down a unit
    if cap is not None:
        saving = min(saving, cap)
    tried: list[tuple[float, float, dict[str, int]]] = []  # (saving asked, predicted, widths)
    short: float | None = None  # largest saving asked whose prediction is over the budget
    enough: float | None = None  # smallest saving asked whose prediction meets it
    for _ in range(attempts):
        try:
            widths = solve(groups, saving)
        except ValueError:
            if not tried:
                raise
            enough = enough if enough is not None else saving  # past the floor: back off
            saving = ((short or 0.0) + saving) / 2
            continue
        predicted = predict(widths)
        tried.append((saving, predicted, widths))
        if predicted <= budget_ms * (1 + tolerance):
            if predicted >= budget_ms * (1 - 3 * tolerance):
                break
            enough = saving if enough is None else min(enough, saving)
        else:
            short = saving if short is None else max(short, saving)
        if short is not None and enough is not None:
            saving = (short + enough) / 2
        else:
            achieved = current_ms - predicted
            saving = saving * 2 if achieved <= 0 else saving * (current_ms - budget_ms) / achieved
        if cap is not None and saving > cap:
            if tried and tried[-1][0] >= cap:  # the narrowest widths were tried and are not enough
                break
            saving = cap
    meeting = [t for t in tried if t[1] <= budget_ms * (1 + tolerance)]
    if meeting:
        best = max(meeting, key=lambda t: t[1])
        return best[2], best[1]
    fastest = min(tried, key=lambda t: t[1])
    return narrow_to_budget(groups, fastest[2], fastest[1], budget_ms * (1 + tolerance), predict)


def narrow_to_budget(
    groups: Sequence[GroupChoice],
    widths: dict[str, int],
    predicted: float,
    budget_ms: float,
    predict: Callable[[dict[str, int]], float],
) -> tuple[dict[str, int], float]:
    """Widths from `widths` (predicted `predicted` ms, over `budget_ms`) narrowed one candidate at a time until
    the prediction meets the budget: each move takes the group whose next narrower width loses the least value
    per predicted ms saved. The knapsack's asked saving can stall short of a budget: when its additive savings
    overstate the model's, asking a little more returns the same widths again (the candidates are coarse),
    so its secant steps crawl; the whole-model prediction decides here instead. Stops at the narrowest
    widths; returns the fastest widths reached if even they miss."""
    by_root = {g.root: g for g in groups}
    widths = dict(widths)
    while predicted > budget_ms:
        moves = []
        for root, g in by_root.items():
            k = g.widths.index(widths[root])
            if k == 0:
                continue
            trial = {**widths, root: g.widths[k - 1]}
            ms = predict(trial)
            if ms < predicted:
                moves.append(((g.values[k] - g.values[k - 1]) / (predicted - ms), ms, trial))
        if not moves:
            break
        _, predicted, widths = min(moves, key=lambda m: m[0])
    return widths, predicted
